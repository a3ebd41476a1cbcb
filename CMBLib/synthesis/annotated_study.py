"""Export a synthetic study as a rater would: CMB masks, review statuses, mimic landmarks.

For tests and benchmarks of fine-tuning (`CMBLib.detection.finetune`): the study goes
through the real export path (`CMBLib.annotation.dataset.export_subject`), so what the
fine-tuning reads is exactly what CMBScribbleAnnotator / `cmb export` write.
"""
from collections.abc import Sequence
from typing import Optional

import numpy as np

from ..geometry import Volume


def export_annotated_study(dataset, subject: str, image: Volume, cmb_mask: Volume,
                           statuses: Optional[Sequence[str]] = None, rejected_ras=(), mimics_ras=(),
                           proposed_ras=(), sequence: str = "T2starw", rater: str = "bench"):
    """Write one study into `dataset`; returns the exported file paths.

    cmb_mask: instance labels 1..N on the image grid; statuses[i] is label i + 1's
    review_status (default "confirmed").  rejected_ras / proposed_ras: RAS mm centres of
    detector candidates the rater rejected / left unreviewed (findings without a mask
    voxel: a 1-voxel mark at the centre); mimics_ras: (point, type) pairs.
    """
    from ..annotation.dataset import export_subject
    from ..annotation.document import new_document, new_finding, new_mimic
    from ..annotation.masks import measure_masks

    mask = np.rint(np.asarray(cmb_mask.array)).astype(np.uint16)
    labels = [int(v) for v in np.unique(mask) if v]
    statuses = list(statuses) if statuses is not None else ["confirmed"] * len(labels)
    doc = new_document(subject=subject, sequence=sequence, rater=rater)
    for lab, status in zip(labels, statuses):
        doc["findings"].append(new_finding(lab, rater=rater, review_status=status,
                                           centre_ras=image.kji_to_ras(np.argwhere(mask == lab).mean(0)).tolist()))
    scribbles = mask.copy()
    nxt = max(labels, default=0) + 1
    extra = []
    for status, points in (("rejected", rejected_ras), ("proposed", proposed_ras)):
        for p in points:
            kji = np.rint(image.ras_to_voxel(p)[::-1]).astype(int)
            if np.any(kji < 0) or np.any(kji >= mask.shape):
                continue
            doc["findings"].append(new_finding(nxt, rater=rater, review_status=status, source="detector",
                                               centre_ras=[float(v) for v in p]))
            scribbles[tuple(kji)] = nxt
            if status == "proposed":
                extra.append((tuple(kji), nxt))
            nxt += 1
    for lab_pos, lab in extra:  # proposed findings keep a mask (export removes only rejected ones)
        mask[lab_pos] = lab
    for i, (p, kind) in enumerate(mimics_ras):
        doc["mimics"].append(new_mimic(i + 1, p, kind))
    mask_vol = image.with_array(mask)
    measure_masks(mask_vol, doc)
    return export_subject(dataset, subject, image, image.with_array(scribbles), mask_vol, doc, sequence=sequence)
