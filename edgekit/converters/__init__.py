"""Converters: torch-side stages (prune, distill), the export bridge, ONNX-side stages and validation."""
