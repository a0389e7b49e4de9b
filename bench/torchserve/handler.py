"""TorchServe's handler for the comparison (packed into the model archive as `handler.py`).

TorchServe's own image classifier (`ts.torch_handler.image_classifier.ImageClassifier`) with one
change: the images are submitted at the model's 224 x 224 and the normalisation is inside the
model (model.py), so preprocessing is only `ToTensor` (pixels to [0, 1]) where the stock handler
resizes to 256, crops to 224 and normalises. Everything else is TorchServe's: prediction is
softmax then the top 5 classes; `/explanations` runs `VisionHandler.get_insights`, Captum's
`IntegratedGradients(model).attribute(x, target=target, n_steps=15)` (Gauss-Legendre steps, zero
baseline; the target is the request's `target`, default 0), answered as the attributions
themselves (3 x 224 x 224 floats).
"""

from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier


class PreNormalizedImageClassifier(ImageClassifier):
    image_processing = transforms.Compose([transforms.ToTensor()])
