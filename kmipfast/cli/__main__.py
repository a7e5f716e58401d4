from kmipfast.cli import run

run()
