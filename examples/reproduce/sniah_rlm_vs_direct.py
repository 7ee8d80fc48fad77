"""S-NIAH across context lengths, RLM vs the direct baseline; writes a table and a plot.

python examples/reproduce/sniah_rlm_vs_direct.py --model local --out runs/sniah
"""

from _common import arguments, run_study

if __name__ == "__main__":
    run_study("sniah", arguments(__doc__ or "", "4k,8k,16k,32k,64k,128k,256k"))
