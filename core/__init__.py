"""What every package may import, and which imports nothing else of the project: configuration (params.yaml and the environment), image decoding, core counting, the ONNX predictor."""
