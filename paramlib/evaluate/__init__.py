"""Offline evaluation of trained parameterizations: ``paramlib evaluate``.

    paramlib evaluate [MODEL ...] --dataset STORE --out DIR [--split val,test]
                      [--label LABEL=MODEL] [--workers N] [--chunk-samples N]
                      [--baseline persistence] [--baseline climatology] [--no-baselines]
                      [--ood-bands N]
    paramlib evaluate --compare --out DIR [--runs-dir DIR] [--stores DIR] [--seeds 0 1 2]
                      [--variant small]

- `metrics`: the scores (pure numpy); its docstring is the one list of definitions: scores,
  energy units, the CRPS estimator, the MSKF trigger rule, the out-of-distribution counts;
- `baselines`: persistence and climatology, scored beside the MSKF emulators;
- `sources`: model files, runs exported with their members, stores and layer masses;
- `engine`: the streamed scoring of a store's splits (dask, chunk by chunk);
- `report`: metrics.json, report.md, report.html and the figures;
- `compare`: the MF-RPN comparison over seeds (`compare_models`, also called by the demo);
- `cli`: the subcommand.

On the testbed store ``mfrpn_hf_testbed`` the val split is the historical climate and the
test split +4K; the report sets the splits side by side.
"""
