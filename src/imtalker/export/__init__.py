"""Deployment: ONNX graphs of the networks (`graphs`) and the onnxruntime backend that runs them (`runtime`)."""
