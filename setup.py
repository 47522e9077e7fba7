"""tftrpo: Trust Region Policy Optimization for TensorFlow/Keras and TF-Agents."""
from setuptools import find_packages, setup

# The pins follow ../shared/reference.md: tf-agents 0.19.0 was built against TF 2.15,
# TFP 0.23 and dm-reverb 0.14; typing-extensions must stay at 4.5.0 (tf-agents pins it),
# which keeps gymnasium at 1.3.x. Resolve them all in one `pip install`.
INSTALL_REQUIRES = [
    "tensorflow>=2.15,<2.16",
    "tensorflow-probability==0.23.0",
    "tf-agents==0.19.0",
    "dm-reverb==0.14.0",
    "gymnasium[mujoco]>=1.0,<1.4",
    "ale-py>=0.9",
    # AtariPreprocessing resizes with OpenCV; 4.12+ requires numpy 2.
    "opencv-python-headless<4.12",
    "numpy<2",
    "matplotlib",
    "tqdm",
    "imageio",
]

setup(
    name="tftrpo",
    version="0.1.0",
    description="Trust Region Policy Optimization (Schulman et al. 2015) as a TF-Agents agent",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["tftrpo", "tftrpo.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=7"], "video": ["imageio-ffmpeg"]},  # video: tftrpo-play --video x.mp4
    entry_points={
        "console_scripts": [
            "tftrpo-train=tftrpo.train:main",
            "tftrpo-play=tftrpo.play:main",
        ]
    },
)
