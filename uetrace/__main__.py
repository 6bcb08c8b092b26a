from uetrace.cli import main

main(prog_name="trace")
