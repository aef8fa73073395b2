"""The application layer: one module per stage, each a validated config, ``run(config)`` and ``main(argv)``.

The stages, in the order the data flows (``saliency-ssl <stage> --help`` for each):

=================  ===============================================================================
``label``          exact targets of an image folder into a cache (:mod:`~saliencyssl.app.label`)
``cache``          stats, verify, export and import of caches and packs (:mod:`~saliencyssl.app.cache`)
``views``          a picture of the views a policy makes (:mod:`~saliencyssl.app.views`)
``train-surrogate``  the Pix2Pix surrogate on cached targets (:mod:`~saliencyssl.app.train_surrogate`)
``fidelity``       surrogate vs exact targets, and both vs human masks (:mod:`~saliencyssl.app.fidelity`)
``pretrain``       self-supervised pretraining of a ResNet-18 (:mod:`~saliencyssl.app.pretrain`)
``evaluate``       linear probe, kNN and k-means of a backbone (:mod:`~saliencyssl.app.evaluate`)
``segment``        a segmenter fine-tuned on a backbone at label fractions (:mod:`~saliencyssl.app.segment`)
``grid``           methods x policies, pretrained and evaluated (:mod:`~saliencyssl.app.grid`)
``quickstart``     the whole pipeline on the embedded data (:mod:`~saliencyssl.app.quickstart`)
``report``         the findings tables from the committed result files (:mod:`~saliencyssl.app.report`)
=================  ===============================================================================

Core packages below this one never name a command or a flag: they raise typed errors that carry
their data, and each stage turns them into the command that fixes them. Run folders are managed
by one :class:`~saliencyssl.app.rundir.RunDir`.
"""
