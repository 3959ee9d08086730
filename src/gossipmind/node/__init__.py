"""open_node(): wires store, net, learn and verify; the sleep-time scheduler."""
