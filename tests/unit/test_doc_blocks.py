"""The checker of the documents' answers catches answers that differ from what is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.doc_blocks import blocks, json_matches, parse_shown_json, text_matches

ANSWER = {"model": "purchase", "score": 0.515639, "top_k": [{"index": 1}, {"index": 0}],
          "overlay": "data:image/png;base64,iVBORw0KGgoAAAA", "timings_ms": {"queue": 0.1, "total": 3.0}}


@pytest.mark.parametrize("shown", [
    '{"model": "purchase", "score": 0.52}',
    '{"score": 0.515639, "top_k": [{"index": 1}, "..."]}',
    '{"overlay": "data:image/png;base64,iVBOR...", "timings_ms": {"queue": 9.9, "total": 1.0}}',
    '{"score": 0.5156, "...": "..."}',
])
def test_abridged_answers_match(shown: str) -> None:
    json_matches(parse_shown_json(shown), ANSWER)


@pytest.mark.parametrize("shown", [
    '{"model": "other"}',
    '{"score": 0.53}',
    '{"score": 0.515}',
    '{"top_k": [{"index": 1}]}',
    '{"top_k": [{"index": 0}, "..."]}',
    '{"overlay": "data:image/jpeg..."}',
    '{"timings_ms": {"queue": 0.1}}',
    '{"missing": 1}',
])
def test_differences_are_caught(shown: str) -> None:
    with pytest.raises(AssertionError):
        json_matches(parse_shown_json(shown), ANSWER)


def test_text_answers_compare_numbers_to_the_digits_shown() -> None:
    got = "header\n│ 1 │ cart_adds │ 7 │ +0.5769 │\nmiddle\npurchase 52%: raised most by cart_adds (+0.58)\n"
    text_matches("header\n│ 1 │ cart_adds │ 7 │ +0.577 │\n...\npurchase 52%: raised most by cart_adds (+0.58)", got)
    for wrong in ("header\n│ 1 │ cart_adds │ 7 │ +0.59 │", "header\n│ 1 │ cart_adds │ 8 │ +0.5769 │",
                  "header\nmiddle", "purchase 53%"):
        with pytest.raises(AssertionError):
            text_matches(wrong, got)


def test_answer_blocks_attach_to_the_example_before_them(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("```bash\ncurl a\n```\n\n<!-- answer -->\n```json\n{}\n```\n\n```bash\nmake install\n```\n"
                   "```python\nprint(1)\n```\n")
    found = blocks(doc)
    assert [b.language for b in found] == ["bash", "python"]
    assert found[0].answer is not None and found[0].answer.code == "{}\n"
    assert found[1].answer is None
    orphan = tmp_path / "orphan.md"
    orphan.write_text("<!-- answer -->\n```json\n{}\n```\n")
    with pytest.raises(AssertionError):
        blocks(orphan)
