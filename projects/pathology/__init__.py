"""Study 2: U-Net vs ELU-Net segmentation of tumour cells in H&E tiles (PAIP 2023).

See docs/studies.md, Study 2. `projects.pathology.models` holds the model families.
"""
