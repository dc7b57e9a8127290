"Install hemabook from `settings.ini` (nbdev 2 layout). Reads the ini with configparser only: no pkg_resources."
from configparser import ConfigParser
from pathlib import Path
import shutil
import setuptools
from setuptools.command.build_py import build_py

here = Path(__file__).parent
config = ConfigParser(delimiters=['='])
config.read(here/'settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

expected = 'version description keywords author author_email license min_python lib_name user'.split()
missing = [o for o in expected if o not in cfg]
if missing: raise SystemExit(f"settings.ini is missing keys: {', '.join(missing)}")

licenses = {'apache2': 'Apache-2.0'}  # SPDX expression (license classifiers are deprecated in setuptools)
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
readme = here/'README.md'

class BuildPyWithData(build_py):
    """Also put the experiment notebooks (nbs/experiments) and the bundled samples (data_samples) into the package, as
    `hemabook/_experiments` and `hemabook/_samples`: an installed hemabook finds them there, away from the repository.
    Editable installs read them from the repository and get no copies."""
    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False): return
        skip = shutil.ignore_patterns('.*', '_*.ipynb', '__pycache__')
        for src,name in ((here/'nbs'/'experiments', '_experiments'), (here/'data_samples', '_samples')):
            if src.is_dir(): shutil.copytree(src, Path(self.build_lib)/'hemabook'/name, ignore=skip, dirs_exist_ok=True)

setuptools.setup(
    cmdclass={'build_py': BuildPyWithData},
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else cfg['description'],
    long_description_content_type='text/markdown',
    license=licenses[cfg['license']],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'],
                 'Natural Language :: ' + cfg['language'],
                 'Programming Language :: Python :: 3'],
    url=cfg['git_url'],
    author=cfg['author'], author_email=cfg['author_email'],
    keywords=cfg['keywords'],
    packages=setuptools.find_packages(include=['hemabook', 'hemabook.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'xgboost': ['xgboost>=2.0'],    # BC-SAM's optional XGBoost classifier
                    'tensorboard': ['tensorboard>=2.14'], 'wandb': ['wandb>=0.16'],    # TRACKER=tensorboard|wandb
                    'nifti': ['SimpleITK>=2.3']},          # NIfTI CT volumes for SAMed's predictor (or nibabel)
    python_requires='>=' + cfg['min_python'],
    zip_safe=False,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
