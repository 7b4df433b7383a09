"""Online coupling: an ML parameterization inside the column host model ``paramlib_scm``.

``paramlib_scm`` (``fortran_bridge/host/scm``) is the testbed's Fortran column model run as a
standalone program with its convection slot on the generic column interface
(``fortran_bridge/column_physics``): Betts-Miller (``physics``), a model file through the bridge
(``ml``), the model where its ensemble is confident and its inputs are inside
the training range, or where its calibrated ``ood_score`` is at most 1, Betts-Miller elsewhere
(``hybrid``), or one random ensemble member per column
and step (``stochastic``). This package prepares its inputs, runs it and reads its output:

- `inputs`:     the columns (from the testbed's SST climatology, its tuned Betts-Miller and WTG
                reference) and the namelist ``paramlib_scm`` reads;
- `scm`:        run ``paramlib_scm`` (under ``mpirun`` for several ranks) and open its output;
- `reference`:  the high-fidelity reference, the same column model with the Emanuel scheme
                stepped from Python through the testbed tooling, written in the output's layout;
- `report`:     time series and bias-profile plots and the drift / fallback table of runs
                against a reference;
- `cli`:        ``paramlib couple run | reference | report``;
- `ood`:        ``paramlib ood calibrate``: a model file with the hybrid's out-of-distribution
                score (`paramlib.models.ood`) and its calibration report;
- `demo_stage`: the online experiment of ``make demo``.
"""
