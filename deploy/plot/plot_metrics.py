#!/usr/bin/env python3
"""Samples partner-sync's /metrics into a file, and plots the dashboard's main panels from it.

    plot_metrics.py sample URL FILE [--every 5] [--for 240]   one JSON line per scrape
    plot_metrics.py plot FILE IMAGE                            runs, rows, requests and 429s,
                                                               freshness, grant expiry, tokens

A picture of the same series as deploy/grafana/partner-sync.json, for where no Grafana (or its
image renderer) runs; record_demo.sh makes one against the sandbox. `plot` needs matplotlib.
"""

import argparse
import json
import re
import sys
import time
import urllib.request
from collections import defaultdict

SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """The partner_sync_* samples of a Prometheus text exposition, as [name, labels, value]."""
    samples = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1).startswith("partner_sync_"):
            labels = dict(LABEL.findall(match.group(2) or ""))
            samples.append([match.group(1), labels, float(match.group(3))])
    return samples


def sample(url, path, every, duration):
    end = time.time() + duration
    with open(path, "a", encoding="utf-8") as out:
        while time.time() < end:
            started = time.time()
            try:
                with urllib.request.urlopen(url, timeout=every) as answer:
                    text = answer.read().decode("utf-8")
            except OSError as error:  # a missed scrape is a gap in the plot, not the end
                print(f"scrape failed: {error}", file=sys.stderr)
            else:
                out.write(json.dumps({"t": started, "samples": parse(text)}) + "\n")
                out.flush()
            time.sleep(max(0.0, every - (time.time() - started)))


def load(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def series(scrapes, name, by, where=None):
    """{label values of `by`: ([minutes], [sum of the matching samples])}, like `sum by`."""
    start = scrapes[0]["t"]
    found = defaultdict(lambda: ([], []))
    for scrape in scrapes:
        sums = defaultdict(float)
        for sample_name, labels, value in scrape["samples"]:
            if sample_name == name and all(labels.get(k) in v for k, v in (where or {}).items()):
                sums[tuple(labels.get(k, "") for k in by)] += value
        for key, value in sums.items():
            found[key][0].append((scrape["t"] - start) / 60)
            found[key][1].append(value)
    return dict(sorted(found.items()))


def per_second(points):
    """A counter's rate between consecutive scrapes (a reset counts from zero)."""
    minutes, values = points
    rates = [(v - u if v >= u else v) / ((b - a) * 60)
             for a, b, u, v in zip(minutes, minutes[1:], values, values[1:])]
    return minutes[1:], rates


def derived_age(scrapes, job):
    """Seconds since the succeeded-runs counter of `job` last grew, for a daemon without the
    freshness gauges; None before the first success is seen."""
    minutes, values = series(scrapes, "partner_sync_runs_total", ["job"],
                             {"job": [job], "status": ["succeeded"]}).get((job,), ([], []))
    ages, last, previous = [], None, 0.0
    for m, v in zip(minutes, values):
        if v > previous:
            last = m
        previous = v
        ages.append(None if last is None else (m - last) * 60)
    return minutes, ages


def plot(path, image):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scrapes = load(path)
    if not scrapes:
        sys.exit(f"{path} holds no scrape")
    figure, axes = plt.subplots(2, 3, figsize=(16, 8.5), constrained_layout=True)
    figure.suptitle(f"partner-sync, healthy: {len(scrapes)} scrapes over "
                    f"{(scrapes[-1]['t'] - scrapes[0]['t']) / 60:.1f} minutes")

    def panel(ax, title, unit, lines):
        ax.set_title(title)
        ax.set_xlabel("minutes")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        drawn = False
        for label, (x, y), style in lines:
            ax.plot(x, y, style, label=label, drawstyle="steps-post" if style == "-" else "default")
            drawn = True
        if drawn:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no samples", ha="center", transform=ax.transAxes)

    runs = series(scrapes, "partner_sync_runs_total", ["job", "status"])
    panel(axes[0][0], "Runs (partner_sync_runs_total)", "runs since start",
          [(f"{job} {status}", points, "-") for (job, status), points in runs.items()])

    rows = series(scrapes, "partner_sync_run_rows_total", ["job", "kind"],
                  {"kind": ["inserted", "updated", "deleted"]})
    panel(axes[0][1], "Rows changed (partner_sync_run_rows_total)", "rows since start",
          [(f"{job} {kind}", points, "-") for (job, kind), points in rows.items() if any(points[1])])

    requests = series(scrapes, "partner_sync_http_requests_total", ["partner"])
    refused = series(scrapes, "partner_sync_http_requests_total", ["partner"], {"status": ["429"]})
    panel(axes[0][2], "Requests and 429s per partner", "requests per second",
          [(partner, per_second(points), ".-") for (partner,), points in requests.items()]
          + [(f"{partner} 429", per_second(points), "x--") for (partner,), points in refused.items()])

    age = series(scrapes, "partner_sync_last_success_age_seconds", ["job"])
    threshold = series(scrapes, "partner_sync_stale_threshold_seconds", ["job"])
    if age:
        lines = [(f"{job} age", points, ".-") for (job,), points in age.items()]
        lines += [(f"{job} stale after", points, "--") for (job,), points in threshold.items()]
        title = "Time since the last complete pass"
    else:
        jobs = sorted({job for job, _ in runs})
        lines = [(f"{job} (from runs_total)", derived_age(scrapes, job), ".-") for job in jobs]
        title = "Time since the last succeeded run"
    panel(axes[1][0], title, "seconds", lines)

    expiry = series(scrapes, "partner_sync_grant_refresh_expires_in_seconds", ["label"])
    panel(axes[1][1], "Refresh token expires in", "minutes",
          [(label or "(no label)", (x, [v / 60 for v in y]), ".-") for (label,), (x, y) in expiry.items()])

    tokens = series(scrapes, "partner_sync_token_requests_total", ["partner"])
    panel(axes[1][2], "Token requests (partner_sync_token_requests_total)", "requests since start",
          [(partner, points, "-") for (partner,), points in tokens.items()])

    figure.savefig(image, dpi=80)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sampling = commands.add_parser("sample", help="append a scrape of URL to FILE every few seconds")
    sampling.add_argument("url")
    sampling.add_argument("file")
    sampling.add_argument("--every", type=float, default=5.0, help="seconds between scrapes")
    sampling.add_argument("--for", dest="duration", type=float, default=240.0, help="seconds in all")
    plotting = commands.add_parser("plot", help="plot the scrapes in FILE to IMAGE (.png, .svg)")
    plotting.add_argument("file")
    plotting.add_argument("image")
    args = parser.parse_args()
    if args.command == "sample":
        sample(args.url, args.file, args.every, args.duration)
    else:
        plot(args.file, args.image)


if __name__ == "__main__":
    main()
