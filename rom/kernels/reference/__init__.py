"""The pure-torch references: the semantics every backend of a kernel op must match (one module per family).

    scan         selective_scan_reference (chunked, CPU-fast), selective_scan_sequential (the float64 ground
                 truth of the tests)
    conv         causal_conv1d_reference
    experts      the expert dispatch's sort, (un)permutations and grouped-GEMM projection
    routing      router inputs and top-1 routing
    weight_cast  the widening casts of weight gradients
    inner        a mixer's inner path composed of a conv and a scan
    adamw        the master-weight AdamW update
    gated_delta  gated_delta_rule_reference (Gated DeltaNet, chunked), gated_delta_rule_sequential (the float64
                 ground truth of the tests)

They import nothing from the op table (rom.kernels.registry), which names them as the "reference" entries.
"""
