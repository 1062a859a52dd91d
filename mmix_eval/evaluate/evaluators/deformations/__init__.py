"""Rotation, shear and zoom of the test images, on the named grids of the paper's Table 4."""
