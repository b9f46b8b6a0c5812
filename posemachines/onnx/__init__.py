"""Models that leave Python: export to one ONNX file and running such a file in ONNX Runtime."""
