"""Motor controller protocols over pyserial, their emulated twins, and safety."""
