"""``python -m api.his_sim``: the simulated HIS (its code is ``api/cli/his_sim.py``)."""

from api.cli.his_sim import main

if __name__ == "__main__":
    main()
