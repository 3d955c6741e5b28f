"""Running the network: devices, exact tiles, back ends and the Engine."""
