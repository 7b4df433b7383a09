"""The bundled testbed: a Fortran column model run with two convection schemes (simplified
Betts-Miller, low fidelity; Emanuel from climt, high fidelity) in two climates (historical,
+4K), and a WRF-format set derived from it. See DESIGN.md "The bundled testbed"."""
