"""The scikit-learn script a user would write for the digits job (the peer of
``bpcore train`` in benchmarks/e2e/run.py): an 80/20 stratified split,
standard scaling, MLPClassifier with its defaults; prints the test accuracy."""

import sys

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.2, stratify=y, random_state=seed)
model = make_pipeline(StandardScaler(), MLPClassifier(random_state=seed))
model.fit(X_train, y_train)
print(f"test accuracy {100 * model.score(X_test, y_test):.1f}%")
