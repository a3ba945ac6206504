"""What `simulate` swaps in at the composition root: simulated hardware and the bench report."""
