"""Study 2: U-Net vs ELU-Net segmentation of tumour cells in H&E tiles (PAIP 2023).

See /work/shared/STUDIES.md, Study 2. `projects.pathology.models` holds the model families.
"""
