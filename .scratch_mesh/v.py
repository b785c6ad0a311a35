import dolfinx, gmsh, scipy, numpy, mpi4py; print(dolfinx.__version__, gmsh.__version__, scipy.__version__, numpy.__version__)
import pytest; print(pytest.__version__)
from dolfinx.io import gmshio; import inspect; print(inspect.signature(gmshio.model_to_mesh)); print(inspect.signature(gmshio.read_from_msh))
