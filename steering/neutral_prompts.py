"""Neutral prompts for language-steering evaluations, written for this project, with translations.

Everyday sentence openings with no language cue; none is taken from the Bible corpus that
FOXP2 and the language-neuron analyses are built from, so they are held out from every
recipe. `NEUTRAL["es"][i]` translates `NEUTRAL["en"][i]`: the translations give a
language-matched fluency baseline (the model's own continuations when prompted in the target
language).
"""

from __future__ import annotations

NEUTRAL: dict[str, list[str]] = {
    "en": [
        "Once upon a time, there was a little girl who", "My grandmother always told me that",
        "The most important thing in life is", "When I arrived at the station, I saw",
        "The children were playing in the garden when", "I think that people should",
        "The story begins in a small village where", "After dinner, we decided to",
        "She opened the letter and read", "The teacher asked the students to",
        "Every summer my family goes to", "He walked into the room and said",
        "The best advice I ever received was", "Last night I dreamed that",
        "The city was quiet because", "My friend and I talked about",
    ],
    "es": [
        "Había una vez una niña que", "Mi abuela siempre me decía que",
        "Lo más importante en la vida es", "Cuando llegué a la estación, vi",
        "Los niños jugaban en el jardín cuando", "Creo que la gente debería",
        "La historia comienza en un pequeño pueblo donde", "Después de cenar, decidimos",
        "Ella abrió la carta y leyó", "El profesor pidió a los estudiantes que",
        "Cada verano mi familia va a", "Entró en la habitación y dijo",
        "El mejor consejo que he recibido fue", "Anoche soñé que",
        "La ciudad estaba tranquila porque", "Mi amigo y yo hablamos de",
    ],
    "fr": [
        "Il était une fois une petite fille qui", "Ma grand-mère m'a toujours dit que",
        "La chose la plus importante dans la vie est", "Quand je suis arrivé à la gare, j'ai vu",
        "Les enfants jouaient dans le jardin quand", "Je pense que les gens devraient",
        "L'histoire commence dans un petit village où", "Après le dîner, nous avons décidé de",
        "Elle a ouvert la lettre et a lu", "Le professeur a demandé aux élèves de",
        "Chaque été, ma famille va à", "Il est entré dans la pièce et a dit",
        "Le meilleur conseil que j'ai reçu était", "La nuit dernière, j'ai rêvé que",
        "La ville était calme parce que", "Mon ami et moi avons parlé de",
    ],
    "hi": [
        "एक समय की बात है, एक छोटी लड़की थी जो", "मेरी दादी ने मुझसे हमेशा कहा कि",
        "जीवन में सबसे महत्वपूर्ण बात है", "जब मैं स्टेशन पहुँचा, तो मैंने देखा",
        "बच्चे बगीचे में खेल रहे थे जब", "मुझे लगता है कि लोगों को",
        "कहानी एक छोटे से गाँव में शुरू होती है जहाँ", "रात के खाने के बाद, हमने तय किया कि",
        "उसने चिट्ठी खोली और पढ़ा", "शिक्षक ने छात्रों से कहा कि",
        "हर गर्मी में मेरा परिवार जाता है", "वह कमरे में आया और बोला",
        "मुझे मिली सबसे अच्छी सलाह थी", "कल रात मैंने सपना देखा कि",
        "शहर शांत था क्योंकि", "मैंने और मेरे दोस्त ने बात की",
    ],
}

# English only, disjoint from NEUTRAL: for choosing a steering strength without touching the test prompts.
CALIBRATION: list[str] = [
    "On my way to work this morning I", "The small dog ran across the street and", "We bought fresh bread at the market because",
    "Her brother has always wanted to", "The museum was closed, so the tourists", "In our village, the oldest tree",
    "When the rain finally stopped, the farmers", "The new neighbours invited us to", "During the holidays my cousins usually",
    "The football match ended when", "A good friend is someone who", "The kitchen smelled of coffee and",
    "At the end of the long road there was", "My father taught me how to", "The students were nervous before the exam because",
    "Nobody expected the old bridge to",
]
