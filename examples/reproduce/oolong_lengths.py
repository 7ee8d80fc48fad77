"""OOLONG-style aggregation across context lengths, RLM vs direct; a table and a plot.

python examples/reproduce/oolong_lengths.py --model local --out runs/oolong
"""

from _common import arguments, run_study

if __name__ == "__main__":
    run_study("oolong", arguments(__doc__ or "", "8k,16k,32k,64k"))
