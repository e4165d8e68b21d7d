"""What a study declares for the parts of the platform that read it, one module per reader.

The readers (dashboards, benchmarks, the main job, the real-data page, the registry) sit above
the studies in the import layers (.importlinter), so a study cannot import them; the plain
data it hands them lives here, in core, named for the reader:

    dashboard.py   DashboardSpec, CurveSpec, GallerySpec         (dashboards/)
    pipeline.py    StudyProfile, SearchPlan, RealDataBlock,
                   RealSearch                                    (pipeline/main.py, real_data.py, real_search.py)
    benchmarks.py  ReferenceModel, CaseData, TrainingReference,
                   SearchBenchmark                               (benchmarks/)
    holdout.py     HoldoutData, HoldoutStudy                     (registry/)
    headline.py    Headline                                      (every reader of a study)
"""
