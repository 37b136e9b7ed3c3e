"""A tiny, deterministic training run, started as a subprocess (or under torchrun) by the
trainer tests: `python tests/tiny_run.py OUT_DIR [--epochs N]`. Writes OUT_DIR/final.pt.

`python tests/tiny_run.py --jobs JOBS.json` runs many: JOBS.json is a list of
``{"argv": [OUT_DIR, ...], "env": {...}}``; each runs in its own forked process (so torch is
imported once, not once a run), one after the other, and may be killed for real (SIGKILL, see
``FILMLIB_KILL_AT_STEP`` / ``FILMLIB_KILL_IN_SAVE``). Prints the exit statuses as a JSON list
(-9: killed)."""
import argparse
import json
import os
import sys
import traceback

import torch
import torch.nn as nn

from filmlib.train import Trainer, TrainConfig, atomic_save


class TinyData(torch.utils.data.Dataset):
    def __init__(self, n=96, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.visual = torch.randn(n, 3, 8, 8, generator=g)
        self.questions = torch.randint(1, 9, (n, 5), generator=g)
        self.answers = (self.visual.mean((1, 2, 3)) > 0).long() + 2 * (self.questions[:, 0] > 4).long()

    def __len__(self):
        return len(self.answers)

    def __getitem__(self, i):
        return {"visual": self.visual[i], "questions": self.questions[i], "answers": self.answers[i]}


class TinyModel(nn.Module):
    """Question-conditioned CNN without batch norm (SyncBatchNorm has no CPU version)."""
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, visual, questions):
        v = torch.relu(self.conv(visual)).amax((2, 3))      # (N, 8)
        q = self.embed(questions).mean(1)                   # (N, 8)
        return self.head(torch.cat([v, q], 1))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--schedule", default="constant")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--max-samples", type=int)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = TrainConfig(out_dir=a.out, epochs=a.epochs, batch_size=a.batch, patience=None, progress=False, seed=3,
                      schedule=a.schedule, warmup_samples=a.warmup, eval_every_samples=a.eval_every,
                      max_samples=a.max_samples, schedule_samples=a.max_samples or 384)
    torch.manual_seed(0)
    trainer = Trainer(TinyModel(), TinyData(), TinyData(32, seed=1), cfg)
    summary = trainer.fit()
    if trainer.is_main:
        atomic_save(trainer.model.state_dict(), f"{a.out}/final.pt")
        print("steps", summary["steps"])
    return 0


def run_jobs(jobs_file) -> int:
    with open(jobs_file) as f:
        jobs = json.load(f)
    statuses = []
    for job in jobs:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                        # the child: one run, then exit without cleanup
            code = 1
            try:
                os.environ.update(job.get("env", {}))
                code = main(job["argv"])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        statuses.append(os.waitstatus_to_exitcode(status))
    print(json.dumps(statuses))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--jobs"]:
        sys.exit(run_jobs(sys.argv[2]))
    sys.exit(main())
