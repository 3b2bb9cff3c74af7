"""Traffic between colors, shared by the local router and the model server: sticky keys and shadow copies."""
