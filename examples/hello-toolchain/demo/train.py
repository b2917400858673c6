"""A toy training script for the hello toolchain: writes its arguments as the model."""
import argparse
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", default="hello")
parser.add_argument("--alpha", type=float, default=1.0)
args = parser.parse_args()

out = os.path.join(os.environ.get("LEGION_OUTPUT_DIR", "."), "model")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "model.json"), "w") as f:
    json.dump({"greeting": args.greeting, "alpha": args.alpha}, f)
print(f"{args.greeting}: model written to {out}")
