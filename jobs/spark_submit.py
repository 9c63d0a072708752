"""spark-submit entry: `spark-submit [options] jobs/spark_submit.py <larr command> [flags]`.

Under spark-submit the session factory takes the session spark-submit configured (master,
jars, Delta settings come from the submit options), so the same command runs on any cluster.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
