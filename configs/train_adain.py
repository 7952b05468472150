"""Training the AdaIN decoder (Huang & Belongie 2017) with any style method of nst_jax (``kernel``).

    python -m nst_jax.train --net=adain --data=COCO/train2014 --style_data=wikiart --kernel=bn --workdir=w

The paper's style loss is the mean and standard deviation of relu1_1 ... relu4_1 (``kernel=bn``); its scale:
160k iterations at batch 8 with MS-COCO contents and WikiArt styles, 256 px crops of images resized to 512.
"""

from ml_collections import config_dict

from configs import train_johnson


def get_config() -> config_dict.ConfigDict:
    c = train_johnson.get_config()
    c.net = "adain"
    c.kernel = "bn"
    c.batch = 8
    c.steps = 160000
    c.lr = 1e-4
    c.content_layers = "relu4_1"  # adain: the content loss is at relu4_1, against the AdaIN output
    c.style_weight = 1.0
    c.tv_weight = 0.0
    return c
