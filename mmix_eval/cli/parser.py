"""The argument parser's behaviour (one-line errors, no abbreviations) and the commands' examples."""

from __future__ import annotations

import argparse
import warnings

from mmix_eval.errors import did_you_mean

EPILOG = """\
examples:
  mmix-eval train --config configs/quick.yaml --out runs/quick          # embedded digits, ~10 s on a CPU
  mmix-eval train --config configs/cifar10/preactresnet18-manifold_mixup.yaml --out runs/mm-s0
  mmix-eval train --data cifar10 --data-root ~/data --download --model preactresnet18 \\
                  --method manifold_mixup --alpha 2 --seed 1 --out runs/mm-s1
  mmix-eval train --data imagefolder:../shared/data/cifar10-jpeg.tar.gz --model smallnet \\
                  --method input_mixup --epochs 5 --out runs/x
  mmix-eval train --out runs/mm-s1 --resume                              # continue a killed run
  mmix-eval deformations --ckpt runs/quick/model.safetensors --grid table4 --out results/
  mmix-eval fgsm --ckpt runs/quick/model.safetensors --eps 1,2,4,8        # eps in /255 pixel units
  mmix-eval calibration --ckpt runs/quick/model.safetensors --bins 15
  mmix-eval evaluate --ckpt runs/*/model.safetensors --out results/       # every evaluator, many checkpoints
  mmix-eval bench configs/bench/digits-quick.yaml --out runs/bench-digits   # methods x seeds -> report
  mmix-eval report results/ --out reports/x --baseline vanilla --check "manifold_mixup.rotation20 >= vanilla.rotation20"
  mmix-eval evaluate --ckpt runs/x/model.safetensors --evaluators deformations,my_evals:Occlusion --set my_evals:Occlusion.patch=8
  mmix-eval ls models | methods | evaluators | datasets | losses
"""

EXAMPLES = {
    "train": """\
examples:
  mmix-eval train --config configs/quick.yaml --out runs/quick          # embedded digits, ~10 s on a CPU
  mmix-eval train --data cifar10 --data-root ~/data --download --model preactresnet18 \\
                  --method manifold_mixup --alpha 2 --seed 1 --out runs/mm-s1
  mmix-eval train --method cutmix --method-arg prob=1.0 --config configs/quick.yaml --out runs/cm
  mmix-eval train --out runs/mm-s1 --resume                              # continue a killed run
""",
    "deformations": """\
examples:
  mmix-eval deformations --ckpt runs/quick --out results/                 # the paper's Table 4 grid
  mmix-eval deformations --ckpt 'runs/*' --limit 2000 --interpolation nearest
  mmix-eval deformations --ckpt x.pt --model preactresnet18 --data cifar10 --mean 0.49,0.48,0.45 --std 0.25,0.24,0.26
""",
    "fgsm": """\
examples:
  mmix-eval fgsm --ckpt runs/quick --eps 1,2,4,8                          # eps in /255 pixel units
  mmix-eval fgsm --ckpt runs/quick --eps 8/255 --attack pgd --pgd-steps 10 # written to fgsm-pgd10.*
  mmix-eval fgsm --ckpt runs/quick --attack fgsm_official                 # the official code's: eps 0.01,0.03 normalised
  mmix-eval fgsm --ckpt runs/quick --eps 0.1 --eps-unit fraction          # 0.1 of the range = 25.5/255
""",
    "calibration": """\
examples:
  mmix-eval calibration --ckpt runs/quick --bins 15                      # NLL, ECE, MCE, Brier, reliability
  mmix-eval calibration --ckpt 'runs/*/model.safetensors' --out results/
""",
    "evaluate": """\
examples:
  mmix-eval evaluate --ckpt 'runs/*' --out results/                       # every default evaluator
  mmix-eval evaluate --ckpt runs/x --evaluators deformations,my_evals:Occlusion --set my_evals:Occlusion.patch=8
  mmix-eval evaluate --ckpt hf://org/mm-preact18@main --out results/        # from the Hugging Face Hub
  mmix-eval evaluate --ckpt 'runs/*' --evaluators corruptions,fgsm --launcher local --jobs 4   # one job per pair
  mmix-eval evaluate --ckpt 'runs/*' --launcher slurm --partition gpu --gpus-per-run 1       # resumes if preempted
""",
    "export": """\
examples:
  mmix-eval export runs/bench-digits --to tensorboard --dest tb/            # then: tensorboard --logdir tb/
  mmix-eval export results/ --to mlflow --dest sqlite:///mlflow.db --project mixup
  WANDB_MODE=offline mmix-eval export runs/bench-digits --to wandb --project mixup   # wandb sync later
""",
    "push": """\
examples:
  mmix-eval push runs/bench-digits/runs/manifold_mixup-s0 --repo me/mm-digits-s0     # weights, metadata, card
  mmix-eval push runs/x --repo me/x --results results/x --card-only /tmp/card       # look at the card first
""",
    "bench": """\
examples:
  mmix-eval bench configs/bench/digits-quick.yaml --out runs/bench-digits # methods x seeds -> report
  mmix-eval bench configs/bench/baselines-digits.yaml --out runs/bl --dry-run
  mmix-eval bench configs/bench/cifar10-cpu.yaml --out runs/b --launcher local --jobs 2
""",
    "report": """\
examples:
  mmix-eval report runs/bench-digits/results --out reports/x
  mmix-eval report results/ --out reports/x --baseline vanilla --check "manifold_mixup.rotation20 >= vanilla.rotation20"
""",
}

EPILOG_DEFAULT = """\
examples:
  mmix-eval {name} --ckpt runs/quick --out results/
  mmix-eval ls evaluators                                                  # every option of every evaluator
"""


def examples(name: str) -> str:
    return EXAMPLES.get(name) or EPILOG_DEFAULT.format(name=name)


class Parser(argparse.ArgumentParser):
    """No prefix abbreviations (``--epoch 1`` is not taken for ``--epochs``), an unknown option gets a
    suggestion, and every parse error is one line on stderr with exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = getattr(self, "subcommands", {}).get(getattr(ns, "command", None), self)
            options = [o for a in sub._actions for o in a.option_strings]
            first = next((x for x in extras if x.startswith("-")), extras[0])
            flag = first.split("=", 1)[0]
            hint = did_you_mean(flag, options) if flag.startswith("-") else ""
            what = f"unknown option '{flag}'" if flag.startswith("-") else f"unexpected argument '{first}'"
            sub.error(f"{what}{hint}; see {sub.prog} --help")
        return ns

    def error(self, message):
        self.exit(
            2, f"mmix-eval: error: {self.prog.removeprefix('mmix-eval ') + ': ' if ' ' in self.prog else ''}{message}\n"
        )


def join_torchrun(args, device: str) -> None:
    """Under torchrun (WORLD_SIZE > 1) join the process group; rank 0 alone prints and writes."""
    from mmix_eval import distributed  # torch: loaded when an evaluation runs

    if distributed.env_world_size() <= 1:
        return
    distributed.init_from_env(device)
    if not distributed.is_main():
        args.no_progress = True
        warnings.filterwarnings("ignore")  # rank 0 says it once
