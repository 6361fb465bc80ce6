"""One router per audience: devices (wearers), review (humans), operators."""
