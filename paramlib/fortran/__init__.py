"""Python faces of the compiled Fortran libraries: the bridge (`bridge`, the calls a Fortran
host makes) and what they share (`support`: status errors, release on exit)."""
