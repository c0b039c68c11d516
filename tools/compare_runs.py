"""Compares control evaluations with rliable: probability of improvement and performance profiles.

  python tools/compare_runs.py --runs=/tmp/a/eval/600,/tmp/b/eval/600 --out=/tmp/profiles.png

Each run is an evaluation directory holding results.json (`gato_jax.evaluation.reports`). Prints
P(run 1 beats run 2) over their common tasks with its 95% interval (two runs only), and writes
the runs' performance profiles as a PNG.
"""

from absl import app, flags

from gato_jax.evaluation import reports, scores

_RUNS = flags.DEFINE_list(
  "runs", None, "Evaluation directories (holding results.json).", required=True
)
_OUT = flags.DEFINE_string("out", "performance_profiles.png", "Where the profiles PNG goes.")
_RESAMPLES = flags.DEFINE_integer("resamples", 2000, "Bootstrap replicates.")


def main(argv):
  del argv
  runs = {path: reports.episode_scores(reports.load(path)) for path in _RUNS.value}
  if len(runs) == 2:
    (x, x_scores), (y, y_scores) = runs.items()
    out = scores.probability_of_improvement(x_scores, y_scores, _RESAMPLES.value)
    low, high = out["ci"]
    print(
      f"P({x} > {y}) = {out['probability']:.3f} [{low:.3f}, {high:.3f}]"
      f" over {len(out['tasks'])} tasks"
    )
  print(f"performance profiles: {reports.plot_profiles(runs, _OUT.value, _RESAMPLES.value)}")


if __name__ == "__main__":
  app.run(main)
