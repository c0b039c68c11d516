"""A sweep's results.json of two sizes with exact power-law loss curves, for report tests."""


def synthetic_results() -> dict:
  runs = []
  for i, (name, params) in enumerate((("size-tiny", 1e6), ("size-small", 4e6))):
    flops_per_token = 6 * params
    curve = [
      {
        "step": s,
        "tokens": 100 * s,
        "compute": 100 * s * flops_per_token,
        "loss": 2.0 * (100 * s * flops_per_token) ** -0.05,
      }
      for s in range(1, 101)
    ]
    points = [
      {
        "step": s,
        "tokens": 100 * s,
        "compute": 100 * s * flops_per_token,
        "loss": curve[s - 1]["loss"],
        "mean_score": 0.2 * (i + 1) * s / 100,
        "domains": {"gymnax": 0.2 * (i + 1) * s / 100},
        "domain_losses": {"gymnax": 1.0 / (i + 1)},
        "train_seconds": 60.0,
        "eval_seconds": 30.0,
      }
      for s in (50, 100)
    ]
    runs.append(
      {
        "name": name,
        "overrides": {"model.size": name[5:]},
        "size": name[5:],
        "params": params,
        "flops_per_token": flops_per_token,
        "tokens_per_step": 100,
        "steps": 100,
        "points": points,
        "curve": curve,
        "train_seconds": 120.0,
        "eval_seconds": 60.0,
      }
    )
  return {"ladder": "synthetic", "runs": runs, "missing": []}
