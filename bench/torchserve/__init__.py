"""Our service against TorchServe 0.12 on the same resnet18: `python -m bench.torchserve`
(`make bench-torchserve`; bench/README.md, "Against TorchServe")."""
