"""Example bodies for the OpenAPI schema (`/docs` shows them).

Each request is valid for the demo catalog, and each answer is what the service gave for it
(data URIs abridged, timings aside): tests/api/test_openapi.py sends every request example to a
live server and compares its answer with the example.
"""

from __future__ import annotations

from typing import Any

PURCHASE_ROW: dict[str, float] = {"age": 31, "monthly_spend": 1047.7, "category_views": 5, "cart_adds": 7,
                                  "follows_brand": 1, "return_rate": 0.444}
STAR_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAF+0lEQVR42k2WP6ikVxnGf89zzszde3fjn+TKQooQMIEghBRRRBs7O0UsrLQKFqJCELQULLVT0CZtREgnSLRQ0IAGLIQERAmoWVc0gYBx7969O/N9530szswmHzMw33A45/3zO8/z6uUXf13N6bBxbbSKUYtbc9cWZRX7tdWygcamD8iSxEq2fWxqVVZXmrLp6q20jhqM2kYbuZXc5KRSAYQEgCBJAK14hQDSQAsAJBwX4ooqJEmYH0AihPRWoyurTdJqLY2mhEgajlJWSlURNOEwKqOJyqpytxaJomVNIoWkUmWKCHWSGbCSJBKQSjkOmFFtkFLUs5SwJGZwsdYxX0QqwkmJQCUziXSlHPWEGomDpELk8EIRpIQwEIfTnEZcCjRVVRQckSyUCLVil3UMqAoi6VBbIAUJ2mwbKjIixUJAZo8UFCD2bEEph/JLzCYaaME1PFCVQ6u4Vhg19pvN+Pcbtb9bGxdZ11bVgKKGSVRRKUUNUVVrPFpWaqVWlMo4HD05IYg4aQlBnWV38ovvX757+4QTr9QBHDHzTsIsALRRfRy26qEHUpYsC0rUhEVVIUiMOjvdvvbz/Ztv8p+/lbaqQIrUcEarcpm4RhNOiFG1CgFcLC2jZbWEbcmWeos1pCS1vba78xa/f+nqVCe3/nhVO5eCLMvWBCUEUXUsQmZ6HCmrJIZIZWVcZf+/pv2m7bfb2p71h1/96f7dd3xKu/3XdvVuO/tAhpbBOrKSChUVjh1UytKQMzqDLBM7hT5r6Fb7i82LP7i4e29zdhptaM7bf99f0xb57mV//WWe/uzpjYd8dn247XeXy9iHQx4HAUgKBmCToXnf9dufvZywjnHter/1Rnvhu3eW/YlJwZb2ANqVdXui85s+f5zrH7l6+lkee0ajqjVnEtrKTd4IGLWmgiXbtiVk3b83PvrM8tXvPXx6rRpcc+d9z0a9du32P/2HV9a33uhnH0oo5g7N0kHEAMnzdw+9YiQjqdS5vMgTn6ivfOfG9myM2bL3ntxjuf7Q8ty3tl//0ekjT7LUkInAlTZwQUiDQkEVCqUP40AZyu73LnZPfOraIzdPbv+DracyRtJCPfVsffH5s5uP7+5e7Gs9Hi8kLI2DtqIHl33qTZNjpytWyOmp3/zzuHXr6sRNGLAjMbJ++nPXbz61XtxZaaILe7RUi2hQZWLQKtlytx2a5NE0mgBJhL7d/OXVAdulxr3ahd1VDTVCe/tfy7Ibaod7/KDsa1N1y4qQlMSaGwIYhwYWtL7h8g6v/W6/q/WDjy6f/9rZN184f/IZXSw7SXffWUTHlnu6h4UVG1esUjBYWAURpFSjA5ZKGmR7ffP6K+WT9cvP3/jYZ3J2vkTrcz+88cufXP3qpcv/vr2JxHsJTBOc1CMdUJJF5AjJbn3toiJjsezr5uP6xo8//IHzcXn3/uWlmlvb7r7w7c35o2d/+s29+1enmxaqbCUWCmMAzdNxholCg1FqRuqS41ST0G7okcfa2tY7l3HshpsoX9zZffJLeuzjp2N//+RU0YEUEFY1QlgnQJIMhU0OrmUZ2yXo2ldS7k0xDUmRRnPfXdb5o+vJlhHleLFKGQ1JltNcIk65JNM3cw7oQJImV8KsazIl9uAQDUCmVk3kJ/0AmjZujtAMI0sotUqy1eVV8hhEwGI31ON9pQgd97Shwq1VBApuTmW4RDU1S4uIDLElKJUFdir9iOsqjcP8Y8lOFVBdqzDYB4WZAUIsZ3rcNGEroUxkg8MYA3BEKRGFYkXEa0mxhwJBZbkFucWioiTClQdDmiw50pwyPMywaCpnioEfUHxEQ5JkJ9FRJEs4tONiHX2ZMOUh4iDd1jDZOE2GSmquj1IaUWWGQ82BaKikCFpExWGTyJjelNnxTEYbKKJkIqnPGMX7wp9SmKlRqxntMKvO+5uDAU+IgFiylARRTcPM7kNSsSmlnJqqXS0xKChhWmDNeU9ikmPFsClMuZIUWpuINAcgzXxNqfyeo+gwVB9npFjT65SmEg/+PPjW5OrwndMKHHsmzTa0/wN8gi3SqcuU+AAAAABJRU5ErkJggg=="
)
"""A 32 x 32 PNG of models/shapes/examples/star.webp."""

PREDICT_REQUEST: dict[str, Any] = {"instances": [PURCHASE_ROW], "top_k": 2}
PREDICT_IMAGE_REQUEST: dict[str, Any] = {"instances": [{"b64": STAR_PNG_B64}], "top_k": 2}
PREDICT_ANSWER: dict[str, Any] = {"model": "purchase", "predictions": [
    {"index": 1, "label": "purchase", "score": 0.515639,
     "top_k": [{"index": 1, "label": "purchase", "score": 0.515639},
               {"index": 0, "label": "no_purchase", "score": 0.484361}]}]}

EXPLAIN_REQUEST: dict[str, Any] = {
    "instances": [PURCHASE_ROW], "method": "integrated_gradients", "params": {"n_steps": 64},
    "outputs": ["summary"], "top_k": 2}
EXPLAIN_IMAGE_REQUEST: dict[str, Any] = {
    "instances": [{"b64": STAR_PNG_B64}], "method": "gradcam", "outputs": ["overlay"], "top_k": 2,
    "render": {"colormap": "jet", "alpha": 0.5, "sign": "absolute", "max_size": 256}}
EXPLAIN_ANSWER: dict[str, Any] = {
    "model": "purchase", "method": "integrated_gradients",
    "params": {"n_steps": 64, "baseline": "zeros", "method": "gausslegendre"},
    "explanations": [{
        "prediction": PREDICT_ANSWER["predictions"][0],
        "target": {"index": 1, "label": "purchase", "score": 0.515639},
        "convergence_delta": 0.000795722,
        "attributions": [
            {"feature": "age", "value": 31.0, "attribution": -0.0858523},
            {"feature": "monthly_spend", "value": 1047.7, "attribution": 0.15855},
            {"feature": "category_views", "value": 5.0, "attribution": 0.132449},
            {"feature": "cart_adds", "value": 7.0, "attribution": 0.577743},
            {"feature": "follows_brand", "value": 1.0, "attribution": 0.0545946},
            {"feature": "return_rate", "value": 0.444, "attribution": -0.411903}],
        "summary": "purchase 52%: raised most by cart_adds (+0.58) and monthly_spend (+0.16), "
                   "lowered by return_rate (-0.41) and age (-0.09)"}],
    "timings_ms": {"queue": 0.101, "compute": 4.594, "render": 0.191, "total": 5.015}}
EXPLAIN_IMAGE_ANSWER: dict[str, Any] = {
    "model": "shapes", "method": "gradcam", "params": {"layer": "features"},
    "explanations": [{
        "prediction": {"index": 3, "label": "star", "score": 0.798334,
                       "top_k": [{"index": 3, "label": "star", "score": 0.798334},
                                 {"index": 2, "label": "triangle", "score": 0.18437}]},
        "target": {"index": 3, "label": "star", "score": 0.798334},
        "convergence_delta": None,
        "overlay": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAA..."}],
    "timings_ms": {"queue": 0.089, "compute": 4.579, "render": 1.506, "total": 7.106}}
PROBLEM_EXAMPLE: dict[str, Any] = {
    "type": "about:blank", "title": "Unprocessable Content", "status": 422,
    "detail": "instance 0: missing feature 'monthly_spend' (and 4 more)",
    "errors": [{"loc": ["instances", 0, "monthly_spend"], "msg": "missing"},
               {"loc": ["instances", 0, "category_views"], "msg": "missing"},
               {"loc": ["instances", 0, "cart_adds"], "msg": "missing"},
               {"loc": ["instances", 0, "follows_brand"], "msg": "missing"},
               {"loc": ["instances", 0, "return_rate"], "msg": "missing"}]}
