"""Sources of raw venue messages: capture files (replay), live websockets, the simulator."""
