"""The SID network, its weights (TensorFlow or safetensors), the registry and the model cache."""
