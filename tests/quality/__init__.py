"""Tests of the analyze stage: quality metrics, scene condition, BRISQUE, lens adhesion."""
