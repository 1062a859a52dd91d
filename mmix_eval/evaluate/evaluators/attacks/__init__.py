"""FGSM and the other white-box attacks (PGD, AutoAttack), one attack path per method of ``WhiteBoxAttack``."""
