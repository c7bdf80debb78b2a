"""The collector stage (phase 5): benchmark an aligned op over its test-case grid and write the perf files aiconfigurator loads."""
