"""Many runs at once: Hydra sweeps and their summary, and gentrain-compare's arms, checks,
state, child runs and report."""
