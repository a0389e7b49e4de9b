"""Cluster mode: the service as a Ray Serve deployment, one replica of the whole service per device.

`options` and `proxy` import no Ray (the options are plain data, the proxy middleware is ASGI);
`ray` (the deployment) and `run` (the `explainserve serve --ray` driver) need the `ray` extra.
Nothing outside this package imports Ray, and the embedded mode never imports this package.
"""
