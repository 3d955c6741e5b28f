"""The SID network, its weights (TensorFlow or safetensors), the registry, the official weights and the model cache."""
