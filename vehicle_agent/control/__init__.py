"""Act, fourth stage of the flow: the lens-cleaning fan and thermal protection."""
