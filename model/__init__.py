"""Data, network, training, evaluation and ONNX export of the chest X-ray classifier."""
