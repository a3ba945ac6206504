"""The footage bank: real recordings and photos with their licences, a drive synthesiser that
turns them into vehicle-like clips, independent renderers of lens soiling and of picture
degradations, and the train/held-out split that keeps evaluation honest (docs/footage.md).

    python -m tools.footage list
    python -m tools.footage build adhesion-moving --out DIR --seed 0
"""
