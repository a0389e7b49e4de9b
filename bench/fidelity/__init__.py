"""How faithful the explanations are (kept out of `make bench`: about 15 minutes on 2 busy cores).

    python -m bench.fidelity                       # -> bench/results/fidelity.md, fidelity.json
    python -m bench.fidelity --images 20 --rows 10 --shap-rows 5 --out /tmp/fidelity   # a quick look

- `images`: every image method at its defaults on generated `shapes` images whose shape's box is
  known: pointing game, deletion and insertion AUC (app.inference.faithfulness), the model
  randomisation sanity check (Adebayo et al., 2018), cost in passes and seconds.
- `tabular`: integrated gradients to a tolerance (convergence and passes against 32 fixed steps),
  and Kernel SHAP's ranking against exact Shapley values by number of samples.

Everything is computed as the service computes it: `app.inference.engine.run_batch` on the
catalog's models, on the CPU.
"""
