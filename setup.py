"Install hemabook from `settings.ini` (nbdev 2 layout). Reads the ini with configparser only: no pkg_resources."
from configparser import ConfigParser
from pathlib import Path
import setuptools

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

setuptools.setup(
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
    extras_require={'dev': dev_requirements, 'xgboost': ['xgboost>=2.0']},   # BC-SAM's optional XGBoost classifier
    python_requires='>=' + cfg['min_python'],
    zip_safe=False,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
