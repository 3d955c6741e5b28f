"""Running the network: devices, exact tiles, back ends, the OpenVINO IR cache, int8 and the Engine."""
