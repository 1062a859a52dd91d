"""Corruptions of the test images, exact to the official CIFAR-10-C code, or read from its distributed files."""
