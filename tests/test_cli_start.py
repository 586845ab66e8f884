"""How fast ``fraudctl`` answers: a benchmark figure printed, never a timed assertion.

What is asserted is the cause of a fast start, not its duration: importing the CLI
loads none of Faust, aiokafka, pandas or scikit-learn (each command imports what it
needs when it runs), and ``--help`` and a usage error still answer correctly.
"""

from __future__ import annotations

from bench.cli_start import HEAVY_MODULES, heavy_modules_loaded, measure


def test_importing_the_cli_loads_no_heavy_library():
    assert heavy_modules_loaded() == [], f"import app.cli loaded some of {HEAVY_MODULES}"


def test_cli_start_time_figure(capsys):
    result = measure(runs=3)
    cases = result["cases"]
    assert cases["help"]["exit_code"] == 0
    assert cases["usage_error"]["exit_code"] == 2
    with capsys.disabled():
        for name, c in cases.items():
            print(
                f"\n[benchmark] fraudctl {' '.join(c['args'])}: median "
                f"{c['wall_seconds_median']:.3f} s wall, {c['cpu_seconds_median']:.3f} s CPU "
                f"(load average {result['load_average'][0]:.1f}; budget 0.5 s, not asserted)",
                end="",
            )
        print()
